using PeftSharp.Autograd;

namespace PeftSharp.Training.Preference;

/// <summary>
/// TRL's preference losses as functions of sequence log-probabilities, each with its derivatives, in double. The objectives
/// feed them the sums (or means) the model's log-prob ops produce and pass the derivatives back through
/// <see cref="Ops.ScalarFunction"/>.
/// </summary>
public static class PreferenceLosses
{
    private static double Ls(double x) => PreferenceMath.LogSigmoid(x);
    private static double S(double x) => PreferenceMath.Sigmoid(x);

    /// <summary>
    /// DPOTrainer.dpo_loss of one pair with z = (π_c − π_r) − (ref_c − ref_r): sigmoid −(1−ε)·logσ(βz) − ε·logσ(−βz);
    /// robust (−(1−ε)·logσ(βz) + ε·logσ(−βz))/(1−2ε); hinge relu(1 − βz); ipo (z − 1/(2β))². Returns the loss and dloss/dz.
    /// </summary>
    public static (double Loss, double DLogits) Dpo(string lossType, double beta, double labelSmoothing, double z)
    {
        double e = labelSmoothing, bz = beta * z;
        switch (lossType)
        {
            case "sigmoid":
                return (-(1 - e) * Ls(bz) - e * Ls(-bz), -(1 - e) * beta * S(-bz) + e * beta * S(bz));
            case "robust":
                return ((-(1 - e) * Ls(bz) + e * Ls(-bz)) / (1 - 2 * e), (-(1 - e) * beta * S(-bz) - e * beta * S(bz)) / (1 - 2 * e));
            case "hinge":
                return 1 - bz > 0 ? (1 - bz, -beta) : (0, 0);
            case "ipo":
            {
                double d = z - 1 / (2 * beta);
                return (d * d, 2 * d);
            }
            default:
                throw new PeftSharpException($"loss_type '{lossType}' is not one of {string.Join(", ", PreferenceOptions.LossTypes)}.");
        }
    }

    /// <summary>
    /// ORPOTrainer.odds_ratio_loss of one pair from the mean log-probs of the chosen and rejected completions:
    /// log_odds = (a_c − a_r) − (log(1 − e^a_c) − log(1 − e^a_r)); the pair's term is −β·logσ(log_odds). Returns
    /// the term, log_odds, and the term's derivatives by a_c and a_r.
    /// </summary>
    public static (double Loss, double LogOdds, double DChosen, double DRejected) OrpoOddsRatio(double beta, double chosen, double rejected)
    {
        double logOdds = chosen - rejected - (Log1MExp(chosen) - Log1MExp(rejected));
        double dRatio = S(-logOdds);
        // d log_odds / d a = 1 + e^a / (1 − e^a) = 1 / (1 − e^a) = −1/expm1(a).
        double dc = -1 / PreferenceMath.Expm1(chosen), dr = 1 / PreferenceMath.Expm1(rejected);
        return (-beta * Ls(logOdds), logOdds, -beta * dRatio * dc, -beta * dRatio * dr);
    }

    /// <summary>log(1 − e^a) for a &lt; 0, as torch.log1p(-torch.exp(a)).</summary>
    public static double Log1MExp(double a) => PreferenceMath.Log1P(-Math.Exp(a));

    /// <summary>
    /// KTOTrainer.kto_loss of one example with logratio = π − ref and the (detached) KL estimate: desirable
    /// w_d·(1 − σ(β(logratio − kl))), undesirable w_u·(1 − σ(β(kl − logratio))). Returns the loss and dloss/dπ.
    /// </summary>
    public static (double Loss, double DLogRatio) Kto(bool desirable, double beta, double weight, double logRatio, double kl)
    {
        if (desirable)
        {
            double s = S(beta * (logRatio - kl));
            return (weight * (1 - s), -weight * beta * s * (1 - s));
        }
        double u = S(beta * (kl - logRatio));
        return (weight * (1 - u), weight * beta * u * (1 - u));
    }

    /// <summary>
    /// RewardTrainer's loss of one pair: −logσ(r_c − r_r − margin). Returns the loss and its derivative by r_c
    /// (by r_r it is the negative). The centring term is added by the caller over the batch.
    /// </summary>
    public static (double Loss, double DChosen) Reward(double chosen, double rejected, double margin)
    {
        double d = chosen - rejected - margin;
        return (-Ls(d), -S(-d));
    }
}
