"""Reusable layers: StyleGAN-style layers, transformer blocks, ResNet, DeepLabV3 head, U-Net."""
