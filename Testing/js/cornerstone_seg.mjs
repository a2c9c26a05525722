#!/usr/bin/env node
// Read one DICOM SEG with @cornerstonejs/adapters (the loader OHIF uses) and print, per referenced
// image, the labels cornerstone3D puts in its labelmap (JSON on stdout). Used by Testing/validators.py.
//
// Usage: node cornerstone_seg.mjs SEG.dcm REFERENCES.json PATH [FRAMES.raw]
//   REFERENCES.json: [{sopInstanceUID, seriesInstanceUID, frameOfReferenceUID, rows, columns,
//                      imagePositionPatient[3], imageOrientationPatient[6], pixelSpacing[2], sliceThickness}]
//                    one per image of the referenced series, in stack order.
//   PATH "buffer":   createLabelmapsFromDICOMBuffer (the adapters decode the pixel data themselves).
//   PATH "frames":   createLabelmapsFromSegImageIds with decodeImageData returning the frames of FRAMES.raw
//                    (what OHIF's image loader hands over: one typed array per frame, of the file's bit depth).
import fs from "node:fs";
import { metaData } from "@cornerstonejs/core";
import * as adapters from "@cornerstonejs/adapters";
import dcmjs from "dcmjs";

dcmjs.log.setLevel("error");
const { createLabelmapsFromDICOMBuffer, createLabelmapsFromSegImageIds } = adapters.adaptersSEG.Cornerstone3D.Segmentation;

function main([segPath, referencesPath, path, framesPath]) {
  const references = JSON.parse(fs.readFileSync(referencesPath, "utf8"));
  const imageIds = references.map((_, i) => `ref:${i + 1}`);
  const byId = new Map(imageIds.map((id, i) => [id, references[i]]));
  const custom = new Map();
  const provider = {
    get(type, imageId) {
      if (custom.has(`${type}|${imageId}`)) return custom.get(`${type}|${imageId}`);
      const r = byId.get(imageId);
      if (!r) return undefined;
      const iop = r.imageOrientationPatient;
      switch (type) {
        case "generalImageModule": return { sopInstanceUID: r.sopInstanceUID };
        case "generalSeriesModule": return { seriesInstanceUID: r.seriesInstanceUID, modality: "CT" };
        case "imagePlaneModule": return {
          rows: r.rows, columns: r.columns, frameOfReferenceUID: r.frameOfReferenceUID,
          imagePositionPatient: r.imagePositionPatient, imageOrientationPatient: iop,
          rowCosines: iop.slice(0, 3), columnCosines: iop.slice(3, 6),
          pixelSpacing: r.pixelSpacing, rowPixelSpacing: r.pixelSpacing[0], columnPixelSpacing: r.pixelSpacing[1],
          sliceThickness: r.sliceThickness,
        };
        case "imagePixelModule": return {
          samplesPerPixel: 1, photometricInterpretation: "MONOCHROME2", rows: r.rows, columns: r.columns,
          bitsAllocated: 16, bitsStored: 16, highBit: 15, pixelRepresentation: 1,
        };
        case "sopCommonModule": return { sopInstanceUID: r.sopInstanceUID, sopClassUID: "1.2.840.10008.5.1.4.1.1.2" };
        case "instance": return {
          Rows: r.rows, Columns: r.columns, SOPInstanceUID: r.sopInstanceUID, SeriesInstanceUID: r.seriesInstanceUID,
          FrameOfReferenceUID: r.frameOfReferenceUID, ImagePositionPatient: r.imagePositionPatient,
          ImageOrientationPatient: iop, PixelSpacing: r.pixelSpacing, SliceThickness: r.sliceThickness,
        };
        default: return undefined;
      }
    },
    addCustomMetadata(imageId, type, value) { custom.set(`${type}|${imageId}`, value); },
  };
  metaData.addProvider((type, imageId) => provider.get(type, imageId), 10000);
  const buffer = fs.readFileSync(segPath);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  let result;
  if (path === "buffer") {
    result = createLabelmapsFromDICOMBuffer(imageIds, arrayBuffer, provider, { tolerance: 1e-3 });
  } else {
    const message = dcmjs.data.DicomMessage.readFile(arrayBuffer);
    const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);
    dataset._meta = dcmjs.data.DicomMetaDictionary.namifyDataset(message.meta);
    const multiframe = dcmjs.normalizers.Normalizer.normalizeToDataset([dataset]);
    const frames = Number(multiframe.NumberOfFrames || 1);
    const raw = fs.readFileSync(framesPath);
    const bytes = raw.byteLength / frames;
    const Typed = Number(multiframe.BitsAllocated) === 16 ? Uint16Array : Uint8Array;
    const decodeImageData = async (_id, frameNumber) => {
      const start = raw.byteOffset + (frameNumber - 1) * bytes;
      return new Typed(raw.buffer.slice(start, start + bytes));
    };
    result = createLabelmapsFromSegImageIds(imageIds, "seg:1", provider, {
      tolerance: 1e-3, multiframe, decodeImageData,
      frameImageIds: Array.from({ length: frames }, (_, i) => `seg:1#frame=${i + 1}`),
    });
  }
  return Promise.resolve(result).then((value) => {
    const images = value.labelMapImages[0];
    const labels = images.map((image) => {
      const data = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
      return { type: data.constructor.name, values: Buffer.from(new Uint16Array(data).buffer).toString("base64") };
    });
    const segments = Object.keys(value.segMetadata?.data ?? {}).filter((k) => value.segMetadata.data[k]).map(Number);
    process.stdout.write(JSON.stringify({ labels, segments, overlapping: value.overlappingSegments }) + "\n");
  });
}

main(process.argv.slice(2)).catch((error) => {
  process.stderr.write(`cornerstone3D could not read the SEG: ${error && error.stack ? error.stack : error}\n`);
  process.exitCode = 1;
});
