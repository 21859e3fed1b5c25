"""Side-by-side ResNet-32 training-step throughput on the CPU: fp32 vs bf16 autocast, channels_last
vs NCHW (synthetic batch of 128, 3 timed rounds of 3 steps each after one warm-up round, interleaved).
The README's "bf16 is slower on this CPU" comes from this script:

    .venv/bin/python scripts/ab_cpu_precision.py
"""
import time, torch, torch.nn.functional as F
from ltlab.models import build_model
torch.manual_seed(0)
x = torch.randn(128,3,32,32); y = torch.randint(0,10,(128,))
def mk(cl):
    m = build_model("resnet32",10)
    if cl: m = m.to(memory_format=torch.channels_last)
    return m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, foreach=True)
cfgs = {"fp32_cl": (True, None), "bf16_cl": (True, torch.bfloat16), "fp32_nchw": (False, None), "bf16_nchw": (False, torch.bfloat16)}
models = {k: mk(v[0]) for k, v in cfgs.items()}
res = {k: [] for k in cfgs}
for r in range(4):
    for k,(cl,dt) in cfgs.items():
        m,opt = models[k]; xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        t=time.perf_counter()
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt is not None):
                out = m(xx)
            loss = F.cross_entropy(out["logits"].float(), y); opt.zero_grad(); loss.backward(); opt.step()
        if r: res[k].append(3*128/(time.perf_counter()-t))
for k,v in res.items(): print(k, [round(a) for a in v])
