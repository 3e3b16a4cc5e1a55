"""GRPO loss reference written from TRL's GRPOTrainer (_generate_and_score_completions: advantages; _compute_loss: the
per-token clipped objective, the k3 KL and the loss_type reductions), in float64 on fixed log-probs, masks and rewards.
Run with torch 1.13: /usr/bin/python3 reference.py > reference.json (GrpoLossTests reads it).

With --reused: TRL's loss and d loss / d logp for a rollout reused after the weights moved (ratio pi/pi_old != 1), on the
real per-token log-probs of PeftSharp's tiny GPT-2 in reused_rollout_input.json (GrpoObjectiveTests writes it with
PEFTSHARP_WRITE_GRPO_FIXTURE=1): /usr/bin/python3 reference.py --reused > reused_rollout.json."""
import json
import os
import sys
import torch


def reused():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "reused_rollout_input.json")) as f:
        x = json.load(f)
    width = max(len(r) for r in x["logps"])

    def pad(rows):
        return torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float64)

    lp = pad(x["logps"]).requires_grad_(True)
    old, ref, mask = pad(x["old"]), pad(x["ref"]), pad(x["mask"])
    adv = torch.tensor(x["advantages"], dtype=torch.float64).unsqueeze(1)
    eps_low, eps_high, beta = x["epsilon"], x["epsilon_high"], x["beta"]
    coef_1 = torch.exp(lp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * (torch.exp(ref - lp) - (ref - lp) - 1)
    assert x["loss_type"] == "grpo"
    loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    loss.backward()
    region = ((coef_1 < 1 - eps_low) & (adv < 0)) | ((coef_1 > 1 + eps_high) & (adv > 0))
    grad = [[g for g, _ in zip(row, r)] for row, r in zip((lp.grad * mask).tolist(), x["logps"])]
    print(json.dumps({"loss": loss.item(), "grad": grad, "clip_region": ((region.double() * mask).sum() / mask.sum()).item(),
                      "ratio_min": coef_1[mask.bool()].min().item(), "ratio_max": coef_1[mask.bool()].max().item(),
                      "torch": torch.__version__}))


if len(sys.argv) > 1 and sys.argv[1] == "--reused":
    reused()
    sys.exit(0)

torch.manual_seed(15)
G, N, T, MAX_COMPLETION = 3, 6, 5, 6
lengths = [5, 3, 4, 2, 5, 1]
mask = torch.zeros(N, T, dtype=torch.float64)
for i, l in enumerate(lengths):
    mask[i, :l] = 1
mask[4, :] = 0  # a truncated completion masked out (mask_truncated_completions)
logps = -torch.rand(N, T, dtype=torch.float64) * 3
old = logps + 0.3 * torch.randn(N, T, dtype=torch.float64)
ref = logps + 0.5 * torch.randn(N, T, dtype=torch.float64)
rpf = torch.tensor([[1.0, 0.2], [0.0, float("nan")], [1.0, -0.4], [0.5, 0.5], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
weights = torch.tensor([1.0, 0.5], dtype=torch.float64)


def advantages(scale):
    rewards = (rpf * weights.unsqueeze(0)).nansum(dim=1)
    mean_g = rewards.view(-1, G).mean(dim=1).repeat_interleave(G)
    std_g = rewards.view(-1, G).std(dim=1).repeat_interleave(G)
    adv = rewards - mean_g
    if scale == "group":
        adv = adv / (std_g + 1e-4)
    elif scale == "batch":
        adv = adv / (rewards.std() + 1e-4)
    return rewards, adv


def loss_of(loss_type, beta, eps_low, eps_high, use_old, adv):
    lp = logps.clone().requires_grad_(True)
    old_lp = old if use_old else lp.detach()
    coef_1 = torch.exp(lp - old_lp)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss1 = coef_1 * adv.unsqueeze(1)
    per_token_loss2 = coef_2 * adv.unsqueeze(1)
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    per_token_kl = torch.exp(ref - lp) - (ref - lp) - 1
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * MAX_COMPLETION)
    elif loss_type == "dapo":
        loss = (per_token_loss * mask).sum() / mask.sum()  # num_items_in_batch: the step's completion tokens, one process
    loss.backward()
    is_low = (coef_1 < 1 - eps_low) & (adv.unsqueeze(1) < 0)
    is_high = (coef_1 > 1 + eps_high) & (adv.unsqueeze(1) > 0)
    def mm(x):
        return ((x.double() * mask).sum() / mask.sum()).item()
    return {
        "loss": loss.item(), "grad": (lp.grad * mask).tolist(), "kl": mm(per_token_kl),
        "clip_low": mm(is_low), "clip_high": mm(is_high), "clip_region": mm(is_low | is_high),
    }


cases = []
for scale in ["group", "batch", "none"]:
    rewards, adv = advantages(scale)
    for loss_type in ["grpo", "dr_grpo", "dapo", "bnpo"]:
        for beta, use_old in [(0.0, False), (0.04, False), (0.04, True)]:
            r = loss_of(loss_type, beta, 0.2, 0.28, use_old, adv)
            r.update({"scale_rewards": scale, "loss_type": loss_type, "beta": beta, "use_old": use_old,
                      "rewards": rewards.tolist(), "advantages": adv.tolist()})
            cases.append(r)

print(json.dumps({
    "num_generations": G, "max_completion_length": MAX_COMPLETION, "epsilon": 0.2, "epsilon_high": 0.28,
    "lengths": lengths, "mask": mask.tolist(), "logps": logps.tolist(), "old": old.tolist(), "ref": ref.tolist(),
    "rewards_per_func": [[None if x != x else x for x in row] for row in rpf.tolist()], "weights": weights.tolist(),
    "torch": torch.__version__, "cases": cases,
}))
