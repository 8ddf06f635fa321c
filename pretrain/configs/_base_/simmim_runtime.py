# Shared runtime of every SimMIM pre-training config (mmengine Python config).
# The `simmim` dict is the recipe in the official code's units; pretrain.train resolves it at launch (it needs the
# dataset size and the world size) into optim_wrapper.optimizer.lr, param_scheduler, train_cfg and the
# checkpoint interval. lr = base_lr x total batch / base_batch, total batch = batch per GPU x world size x
# accumulative_counts (microsoft/SimMIM main_simmim.py); warmup_lr and min_lr scale the same way.
simmim = dict(
    epochs=None,            # schedule in epochs of the training set (official recipes) ...
    iters=None,             # ... or in iterations (tiny configs); exactly one of the two
    warmup_epochs=0,
    warmup_iters=0,
    base_lr=5e-4,           # at base_batch
    warmup_lr=5e-7,
    min_lr=5e-6,
    base_batch=512,
    lr_policy='cosine',     # 'cosine' | 'multistep'
    milestones=[],          # epochs (or iterations with `iters`) where multistep multiplies the lr by gamma
    gamma=0.1,
    amp='auto',             # 'auto' (bf16 on CUDA if supported, else fp16; none on CPU) | 'bf16' | 'fp16' | 'none'
    checkpoint_interval=1000,  # iterations
    max_keep_ckpts=3,
    cpu_malloc_tuning=True,  # on the CPU: keep freed activations in the heap (pretrain.engine.tune_cpu_malloc)
    vis=dict(num=6, seed=0),  # + dataset=dict(...): held-out images for the reconstruction figure (default: train data)
)

model = dict(type='SimMIMModel', mask_patch=32, mask_ratio=0.6, compile_encoder=False)

optim_wrapper = dict(
    constructor='SimMIMOptimWrapperConstructor',
    # fused=True: one kernel for all tensors (measured 0.09 s vs 0.26-0.36 s per ViT-B step on the 2-core CPU,
    # clip included; results/perf); the update is the same AdamW
    optimizer=dict(type='AdamW', lr=None, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, fused=True),
    clip_grad=dict(max_norm=5.0),
    accumulative_counts=1,
)

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='SimMIMRunHook')]

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
log_processor = dict(by_epoch=False, window_size=20)
log_level = 'INFO'
randomness = dict(seed=0, diff_rank_seed=True)
default_scope = 'mmengine'
