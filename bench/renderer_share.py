"""Share of one end-to-end (finetune) training step spent in the renderer's kernels.

    python bench/renderer_share.py

cvpr18 on the paper mesh, B = 8, CPU: times three optimiser steps under cProfile and sums the
time inside nl3dmm._C (rasterize, interpolate, sample_texture and their backward passes).
"""
import cProfile, pstats, time, torch, numpy as np
from nl3dmm.model.adversarial import PatchDiscriminator
from nl3dmm.face.facemodel import load_face_model
from nl3dmm.model.networks import build_model
from nl3dmm.training.batches import to_device
from nl3dmm.training.objectives import FinetuneObjective
torch.manual_seed(0)
fm=load_face_model("paper"); model=build_model("cvpr18", fm).to(memory_format=torch.channels_last)
rng=np.random.default_rng(0); B=8
arrays=dict(image=(rng.random((B,224,224,3))*255).astype(np.uint8), m=np.tile(fm.m_mean,(B,1)).astype(np.float32),
  landmarks=(rng.random((B,68,2))*224).astype(np.float32), texture=(rng.random((B,192,224,3))*255).astype(np.uint8), texture_mask=rng.random((B,192,224))>0.3)
batch=to_device(arrays, torch.device("cpu"))
opt=torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5,0.999))
obj=FinetuneObjective(model, fm, PatchDiscriminator(), 0.1)
def step():
    opt.zero_grad(set_to_none=True); out=model(batch["image"]); loss,_,_=obj(model,out,batch,with_landmarks=True); loss.backward(); opt.step()
step()
pr=cProfile.Profile(); t=time.perf_counter(); pr.enable()
for _ in range(3): step()
pr.disable(); total=(time.perf_counter()-t)
st=pstats.Stats(pr); render=sum(v[2] for k,v in st.stats.items() if 'nl3dmm._C' in str(k[2]) )
print(f"step {total/3:.3f} s, renderer kernels {render/3*1e3:.1f} ms = {100*render/total:.1f}%")
