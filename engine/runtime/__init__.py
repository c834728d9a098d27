"""What the machine offers, asked in one place: which device to run on and how much memory
there is. The lowest floor of the package beside the kernels: it imports only torch."""
from .devices import resolve_device
from .memory import machine_memory, process_resident_bytes

__all__ = ["resolve_device", "machine_memory", "process_resident_bytes"]
