"""User-facing error types: each names the problem in words, never a JAX traceback."""


class CATError(ValueError):
    """Base class for errors caused by bad user input (config, audio, codes, checkpoints)."""


class ConfigError(CATError):
    """A config is malformed or inconsistent."""


class AudioError(CATError):
    """Audio is missing, unreadable, empty, or has the wrong shape."""


class CodesError(CATError):
    """Codes are out of range, have too few quantizers, or the wrong shape."""


class CheckpointError(CATError):
    """A checkpoint directory is missing, incomplete, corrupt, or does not match the config."""


class StreamError(CATError):
    """A stream engine was asked for something it cannot do (no free slot, an unknown or ended stream)."""
