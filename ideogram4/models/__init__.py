"""Pure nn.Modules (no I/O): the DiT, the text-encoder wrapper, the VAE wrapper, fp8 Linear."""
