"""Protein backbones as Cα point clouds: data (PDB/mmCIF folders, homology split), metrics, Cα-trace I/O and
the Cα diffusion model with its training task."""
