"""The deployable artifact (``.qpt``): writing it and loading it back bit for bit."""
