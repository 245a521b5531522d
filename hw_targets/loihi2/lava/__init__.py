"""The Lava backends of the Loihi 2 target: our subtractive-reset process and Lava's stock LIF."""
