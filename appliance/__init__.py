"""emotion-appliance: watch a face, recognise emotion on the device, turn mood into music."""

__version__ = "0.1.0"
