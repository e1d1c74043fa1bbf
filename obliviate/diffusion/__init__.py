"""The diffusion modality: captioned images, a text encoder + cross-attention UNet, DDPM/DDIM
with guidance, judges, and ``DiffusionTask``. Only this package imports diffusers (lazily, for
the optional ``unet="diffusers"`` build); the lean UNet needs torch alone."""
