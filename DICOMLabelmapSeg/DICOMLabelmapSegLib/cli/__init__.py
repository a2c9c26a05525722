"""The ``dicom-labelmap-seg`` command line: ``main.main(argv) -> int``, also ``python -m DICOMLabelmapSegLib.cli``."""
