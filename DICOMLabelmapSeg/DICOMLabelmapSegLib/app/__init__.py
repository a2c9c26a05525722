"""Qt-free use cases shared by the Slicer module panel, the DICOM plugin and the Export dialog."""
