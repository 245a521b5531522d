"""lava-dl's netx format: its writer, export bundle and backend."""
