"""Effect of torch.compile (the networks' forward methods, as `compile=true` does) on a cvpr18
pretrain step, paper mesh, B = 8, CPU:

    python bench/compile_effect.py eager
    python bench/compile_effect.py compile
"""
import time, torch, numpy as np, sys
from nl3dmm.face.facemodel import load_face_model
from nl3dmm.model.networks import build_model
from nl3dmm.training.batches import to_device
from nl3dmm.training.objectives import pretrain_loss
mode = sys.argv[1]
torch.manual_seed(0)
fm=load_face_model("paper"); model=build_model("cvpr18", fm).to(memory_format=torch.channels_last)
if mode == "compile":
    for part in (model.encoder, model.shape_decoder, model.texture_decoder):
        part.forward = torch.compile(part.forward)
rng=np.random.default_rng(0); B=8
arrays=dict(image=(rng.random((B,224,224,3))*255).astype(np.uint8), m=np.tile(fm.m_mean,(B,1)).astype(np.float32),
  texture=(rng.random((B,192,224,3))*255).astype(np.uint8), texture_mask=rng.random((B,192,224))>0.3)
batch=to_device(arrays, torch.device("cpu"))
opt=torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5,0.999))
def step():
    opt.zero_grad(set_to_none=True); out=model(batch["image"]); loss,_=pretrain_loss(model,out,batch); loss.backward(); opt.step()
t=time.perf_counter(); step(); first=time.perf_counter()-t
step()
t=time.perf_counter()
for _ in range(5): step()
print(f"{mode}: first step {first:.1f} s, then {(time.perf_counter()-t)/5:.3f} s/step")
