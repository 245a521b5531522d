"""Data: npz arrays and the embedded digits, image folders, loaders, transforms, label checks (C4)."""
