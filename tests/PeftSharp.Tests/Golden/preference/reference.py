"""PyTorch reference for PeftSharp's preference losses (TRL's formulas), on a tiny GPT-2 with a LoRA adapter.

usage: python3 reference.py MODEL_DIR GOLDEN_DIR
MODEL_DIR: `peftsharp init-model --arch gpt2 --preset tiny --seed 5` (float32 safetensors); GOLDEN_DIR holds adapter/
and batch.json (written by PreferenceReferenceTests.WriteInputs). Writes GOLDEN_DIR/reference.json: for each case the
loss and its gradient by every lora_A / lora_B weight (float64 throughout). Written with torch 1.13 (Debian).
"""
import json, math, struct, sys
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32"
        a, b = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).to(torch.float64).reshape(v["shape"])
    return out


model_dir, golden = sys.argv[1], sys.argv[2]
config = json.load(open(f"{model_dir}/config.json"))
W = read_safetensors(f"{model_dir}/model.safetensors")
adapter_config = json.load(open(f"{golden}/adapter/adapter_config.json"))
lora = {k[len("base_model.model."):]: v.clone().requires_grad_(True) for k, v in read_safetensors(f"{golden}/adapter/adapter_model.safetensors").items()}
scaling = adapter_config["lora_alpha"] / adapter_config["r"]
batch = json.load(open(f"{golden}/batch.json"))
PAD = config["pad_token_id"]
H, L, eps = config["n_head"], config["n_layer"], config["layer_norm_epsilon"]


def gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def hidden_states(ids, mask, use_adapter):
    B, T = ids.shape
    h = W["transformer.wte.weight"][ids] + W["transformer.wpe.weight"][torch.arange(T)][None]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None] & mask.bool()[:, None, None, :]
    for l in range(L):
        p = f"transformer.h.{l}."
        x = F.layer_norm(h, (h.shape[-1],), W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = x @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
        if use_adapter:  # PEFT's LoRA on a Conv1D: lora_B(lora_A(x)) · scaling
            qkv = qkv + (x @ lora[p + "attn.c_attn.lora_A.weight"].T) @ lora[p + "attn.c_attn.lora_B.weight"].T * scaling
        q, k, v = qkv.split(h.shape[-1], dim=-1)
        q, k, v = (t.reshape(B, T, H, -1).transpose(1, 2) for t in (q, k, v))
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        s = s.masked_fill(~allowed, float("-inf"))
        a = torch.softmax(s, dim=-1).nan_to_num(0.0) @ v
        a = a.transpose(1, 2).reshape(B, T, -1)
        h = h + a @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        x = F.layer_norm(h, (h.shape[-1],), W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = gelu_new(x @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        h = h + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    return F.layer_norm(h, (h.shape[-1],), W["transformer.ln_f.weight"], W["transformer.ln_f.bias"], eps)


def pad_batch(seqs):
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def completion_logps(seqs, prompt_lengths, use_adapter):
    """Per sequence: sum over completion tokens of log p(token | prefix), and the number of such tokens (TRL's loss_mask)."""
    ids, mask = pad_batch(seqs)
    logits = hidden_states(ids, mask, use_adapter) @ W["transformer.wte.weight"].T
    logp = torch.log_softmax(logits, dim=-1)
    sums, counts = [], []
    for i, (s, p) in enumerate(zip(seqs, prompt_lengths)):
        pos = [t for t in range(len(s) - 1) if t + 1 >= p]
        sums.append(sum(logp[i, t, s[t + 1]] for t in pos))
        counts.append(len(pos))
    return torch.stack(sums), torch.tensor(counts, dtype=torch.float64)


prompts, chosen, rejected = batch["prompts"], batch["chosen"], batch["rejected"]
n = len(prompts)
seqs = [p + c for p, c in zip(prompts, chosen)] + [p + r for p, r in zip(prompts, rejected)]
plens = [len(p) for p in prompts] * 2


def dpo(beta, loss_type, ls=0.0, rpo_alpha=None):
    sums, counts = completion_logps(seqs, plens, True)
    with torch.no_grad():
        ref, _ = completion_logps(seqs, plens, False)
    if loss_type == "ipo":
        sums, ref = sums / counts, ref / counts
    logits = (sums[:n] - sums[n:]) - (ref[:n] - ref[n:])
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    elif loss_type == "robust":
        losses = (-F.logsigmoid(beta * logits) * (1 - ls) + F.logsigmoid(-beta * logits) * ls) / (1 - 2 * ls)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    loss = losses.mean()
    if rpo_alpha is not None:
        loss = loss + rpo_alpha * (-sums[:n].sum() / counts[:n].sum())
    return loss


def kto(beta, wd, wu):
    examples = [(p + c, len(p), True) for p, c in zip(prompts, chosen)] + [(p + r, len(p), False) for p, r in zip(prompts, rejected)]
    comps = [s[pl:] for s, pl, _ in examples]
    kl_seqs = [s[:pl] + comps[(i - 1) % len(examples)] for i, (s, pl, _) in enumerate(examples)]
    kl_plens = [pl for _, pl, _ in examples]
    sums, _ = completion_logps([s for s, _, _ in examples], kl_plens, True)
    with torch.no_grad():
        ref, _ = completion_logps([s for s, _, _ in examples], kl_plens, False)
        kl = (completion_logps(kl_seqs, kl_plens, True)[0] - completion_logps(kl_seqs, kl_plens, False)[0]).mean().clamp(min=0)
    label = torch.tensor([d for _, _, d in examples])
    ratio = sums - ref
    chosen_losses = 1 - torch.sigmoid(beta * (ratio[label] - kl))
    rejected_losses = 1 - torch.sigmoid(beta * (kl - ratio[~label]))
    return torch.cat((wd * chosen_losses, wu * rejected_losses), 0).mean()


def orpo(beta):
    sums, counts = completion_logps(seqs, plens, True)
    nll = -sums[:n].sum() / counts[:n].sum()
    avg = sums / counts
    c, r = avg[:n], avg[n:]
    log_odds = (c - r) - (torch.log1p(-torch.exp(c)) - torch.log1p(-torch.exp(r)))
    return nll - (beta * F.logsigmoid(log_odds)).mean()


def reward(center):
    ids, mask = pad_batch(seqs)
    h = hidden_states(ids, mask, True)
    last = ((ids != PAD).long() * torch.arange(ids.shape[1])).argmax(-1)  # transformers' last non-pad token
    r = h[torch.arange(len(seqs)), last] @ torch.tensor(batch["score"])
    margins = torch.tensor(batch["margins"])
    loss = -F.logsigmoid(r[:n] - r[n:] - margins).mean()
    return loss + center * ((r[:n] + r[n:]) ** 2).mean()


cases = {
    "dpo_sigmoid": lambda: dpo(0.1, "sigmoid"),
    "dpo_sigmoid_smoothed_rpo": lambda: dpo(0.5, "sigmoid", ls=0.1, rpo_alpha=0.5),
    "dpo_ipo": lambda: dpo(0.1, "ipo"),
    "dpo_hinge": lambda: dpo(0.5, "hinge"),
    "dpo_robust": lambda: dpo(0.5, "robust", ls=0.2),
    "kto": lambda: kto(0.5, 1.3, 0.7),
    "orpo": lambda: orpo(0.5),
    "reward": lambda: reward(0.01),
}
out = {}
for name, f in cases.items():
    for t in lora.values():
        t.grad = None
    loss = f()
    loss.backward()
    out[name] = {"loss": loss.item(), "grads": {k: [float(x) for x in t.grad.flatten()] for k, t in lora.items()}}
    print(f"{name}: {loss.item():.9f}")
json.dump(out, open(f"{golden}/reference.json", "w"), indent=1)
