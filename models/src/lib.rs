//! Models (CLIP, UNet, VAE, schedulers, pipelines) arrive with issue #3.
