"""cat_jax: CAT (MOSS-Audio-Tokenizer) in JAX/Flax NNX: train, encode, decode, export to PyTorch."""
from cat_jax.codec import CAT, DecoderOutput, EncoderOutput
from cat_jax.config import CATConfig
from cat_jax.errors import AudioError, CATError, CheckpointError, CodesError, ConfigError

__all__ = ["CAT", "CATConfig", "EncoderOutput", "DecoderOutput", "CATError", "ConfigError", "AudioError",
           "CodesError", "CheckpointError"]
