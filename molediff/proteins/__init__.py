"""Protein backbones as Cα traces: data (PDB/mmCIF folders, homology split), metrics, Cα-trace I/O, the angle model
(virtual bond angles and dihedrals on the torus, the default) and the Cartesian Cα EGNN model with their training
tasks, the loader that picks one (``sampling``) and the real reference chains (``reference``)."""
