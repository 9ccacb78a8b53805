"""First-party diffuspeech plugins, registered through the diffuspeech.plugins entry-point group."""
