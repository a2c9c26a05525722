#!/usr/bin/env node
// Parse one DICOM file with dcmjs and print a JSON summary on stdout.
// Used by Testing/validators.py (dcmjs_parse) as a validator no one on this project wrote.
// Usage: node parse.js FILE.dcm
"use strict";

const fs = require("fs");
const dcmjs = require("dcmjs");

dcmjs.log.setLevel("error");

function codeOf(sequence) {
  const item = Array.isArray(sequence) ? sequence[0] : sequence;
  if (!item) {
    return null;
  }
  return {
    value: item.CodeValue ?? null,
    scheme: item.CodingSchemeDesignator ?? null,
    meaning: item.CodeMeaning ?? null,
  };
}

function pixelDataBytes(pixelData) {
  if (!pixelData) {
    return 0;
  }
  const parts = Array.isArray(pixelData) ? pixelData : [pixelData];
  return parts.reduce((total, part) => total + (part ? part.byteLength : 0), 0);
}

function main(argv) {
  if (argv.length !== 1) {
    process.stderr.write("usage: node parse.js FILE.dcm\n");
    return 2;
  }
  const buffer = fs.readFileSync(argv[0]);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const message = dcmjs.data.DicomMessage.readFile(arrayBuffer);
  const meta = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.meta);
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);
  const segments = (ds.SegmentSequence ?? []).map((item) => ({
    number: item.SegmentNumber,
    label: item.SegmentLabel ?? null,
    algorithmType: item.SegmentAlgorithmType ?? null,
    category: codeOf(item.SegmentedPropertyCategoryCodeSequence),
    type: codeOf(item.SegmentedPropertyTypeCodeSequence),
  }));
  const summary = {
    transferSyntaxUID: meta.TransferSyntaxUID ?? null,
    sopClassUID: ds.SOPClassUID ?? null,
    sopInstanceUID: ds.SOPInstanceUID ?? null,
    seriesInstanceUID: ds.SeriesInstanceUID ?? null,
    modality: ds.Modality ?? null,
    segmentationType: ds.SegmentationType ?? null,
    numberOfFrames: Number(ds.NumberOfFrames ?? 1),
    rows: ds.Rows ?? null,
    columns: ds.Columns ?? null,
    bitsAllocated: ds.BitsAllocated ?? null,
    photometricInterpretation: ds.PhotometricInterpretation ?? null,
    pixelDataBytes: pixelDataBytes(ds.PixelData),
    segments,
  };
  process.stdout.write(JSON.stringify(summary) + "\n");
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`dcmjs could not parse the file: ${error && error.message ? error.message : error}\n`);
  process.exitCode = 1;
}
