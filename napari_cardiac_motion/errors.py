"""Exceptions with messages meant for the user: each says what is wrong and how to fix it."""


class CardiacMotionError(Exception):
    """Base class of every error the plugin shows to a user (CLI one-liner or napari notification)."""


class InputError(CardiacMotionError, ValueError):
    """The image, labels or folder given cannot be used (wrong dimensions, empty, NaN, corrupt...)."""


class CheckpointError(CardiacMotionError):
    """A model checkpoint is missing, corrupt, or not a napari-cardiac-motion checkpoint."""


class DeviceError(CardiacMotionError):
    """A requested compute device (cuda, mps) is not available on this machine."""


class CancelledError(CardiacMotionError):
    """The user cancelled a long-running job (inference, training)."""


class InputWarning(UserWarning):
    """The input was read, but something about it is questionable (the message says what was assumed)."""


def optional_module(name: str, message: str, error: type[CardiacMotionError] = InputError):
    """Import an optional dependency ``name``, or raise ``error(message)`` (the message says what needs it
    and how to install it)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise error(message) from None
