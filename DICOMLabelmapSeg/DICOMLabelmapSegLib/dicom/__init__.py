"""DICOM Segmentation IOD: transfer syntaxes and codecs, the Segment Sequence, source series, writer and reader.

Pure Python (numpy, pydicom, highdicom); never imports slicer, vtk or qt.
"""
