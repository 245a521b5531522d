"""The bit-exact integer reference simulators of the Loihi 2 target (C3, C5, C6)."""
