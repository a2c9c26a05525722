"""File formats other than DICOM: Slicer .seg.nrrd, NIfTI and NRRD label maps, label tables, mask folders."""
