#!/usr/bin/env node
// Read one DICOM SEG with @cornerstonejs/adapters (the loader OHIF uses) and print, per referenced
// image, the labels cornerstone3D puts in its labelmap (JSON on stdout). Used by Testing/validators.py.
//
// Usage: node cornerstone_seg.mjs SEG.dcm REFERENCES.json ROUTE [FRAMES.raw]
//   REFERENCES.json: [{sopInstanceUID, seriesInstanceUID, frameOfReferenceUID, rows, columns,
//                      imagePositionPatient[3], imageOrientationPatient[6], pixelSpacing[2], sliceThickness}]
//                    one per image of the referenced series, in stack order.
//   ROUTE "buffer":   createLabelmapsFromDICOMBuffer (the adapters decode the pixel data themselves).
//   ROUTE "frames":  createLabelmapsFromSegImageIds with decodeImageData returning the frames of FRAMES.raw
//                    (decoded by another tool: one typed array per frame, of the file's bit depth).
//   ROUTE "loader":  createLabelmapsFromSegImageIds with decodeImageData = OHIF's image loader
//                    (@cornerstonejs/dicom-image-loader: its WASM codecs, then its color conversion for
//                    PALETTE COLOR, as its createImage does before the adapters see the frame).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { metaData } from "@cornerstonejs/core";
import * as adapters from "@cornerstonejs/adapters";
import dcmjs from "dcmjs";

dcmjs.log.setLevel("error");
// Codecs print progress with console.log; stdout carries only the JSON result.
console.log = console.info = (...args) => process.stderr.write(`${args.join(" ")}\n`);
const { createLabelmapsFromDICOMBuffer, createLabelmapsFromSegImageIds } = adapters.adaptersSEG.Cornerstone3D.Segmentation;

const HERE = path.dirname(fileURLToPath(import.meta.url));
const LOADER = path.join(HERE, "node_modules", "@cornerstonejs", "dicom-image-loader", "dist", "esm");
// The image loader's decoders look their .wasm up next to a bundle; in Node they are gathered in one folder.
const WASM = {
  "charlswasm_decode.wasm": "codec-charls/dist/charlswasm_decode.wasm",
  "openjpegwasm_decode.wasm": "codec-openjpeg/dist/openjpegwasm_decode.wasm",
  "openjphjs.wasm": "codec-openjph/dist/openjphjs.wasm",
  "jpegxlwasm_decode.wasm": "codec-libjxl/dist/jpegxlwasm_decode.wasm",
};

// Some codecs (libjxl) are built for browsers only and fetch their .wasm: serve local files as a browser would.
const networkFetch = globalThis.fetch;
globalThis.fetch = async (url, options) => {
  const text = String(url);
  if (text.startsWith("/") || text.startsWith("file:")) {
    const file = text.startsWith("file:") ? fileURLToPath(text) : text;
    return new Response(fs.readFileSync(file), { headers: { "Content-Type": "application/wasm" } });
  }
  return networkFetch(url, options);
};

async function imageLoaderDecoder(multiframe, frameBuffer, transferSyntax) {
  const { decodeImageFrame } = await import(path.join(LOADER, "decodeImageFrameWorker.js"));
  const { default: convertColorSpace } = await import(path.join(LOADER, "imageLoader", "convertColorSpace.js"));
  const wasmBasePath = fs.mkdtempSync(path.join(os.tmpdir(), "cs-wasm-"));
  for (const [name, target] of Object.entries(WASM)) {
    const source = path.join(HERE, "node_modules", "@cornerstonejs", target);
    if (fs.existsSync(source)) fs.symlinkSync(source, path.join(wasmBasePath, name));
  }
  const palette = (color) => {
    const data = multiframe[`${color}PaletteColorLookupTableData`];
    const descriptor = multiframe[`${color}PaletteColorLookupTableDescriptor`];
    if (!data || !descriptor) return undefined;
    const bytes = new Uint8Array(Array.isArray(data) ? data[0] : data);
    return descriptor[2] === 16 ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2) : bytes;
  };
  return async (_id, frameNumber) => {
    const imageFrame = {
      rows: multiframe.Rows, columns: multiframe.Columns, bitsAllocated: multiframe.BitsAllocated,
      bitsStored: multiframe.BitsStored, pixelRepresentation: multiframe.PixelRepresentation, samplesPerPixel: 1,
      photometricInterpretation: multiframe.PhotometricInterpretation, planarConfiguration: 0,
      redPaletteColorLookupTableDescriptor: multiframe.RedPaletteColorLookupTableDescriptor,
      greenPaletteColorLookupTableDescriptor: multiframe.GreenPaletteColorLookupTableDescriptor,
      bluePaletteColorLookupTableDescriptor: multiframe.BluePaletteColorLookupTableDescriptor,
      redPaletteColorLookupTableData: palette("Red"),
      greenPaletteColorLookupTableData: palette("Green"),
      bluePaletteColorLookupTableData: palette("Blue"),
    };
    const decoded = await decodeImageFrame(imageFrame, transferSyntax, frameBuffer(frameNumber),
      { wasmBasePath }, { preScale: { enabled: false } });
    if (decoded.photometricInterpretation === "PALETTE COLOR") {
      const rgb = new Uint8ClampedArray(3 * decoded.rows * decoded.columns);
      convertColorSpace(decoded, rgb, false);
      return rgb;
    }
    return decoded.pixelData;
  };
}

function main([segPath, referencesPath, route, framesPath]) {
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
  if (route === "buffer") {
    result = createLabelmapsFromDICOMBuffer(imageIds, arrayBuffer, provider, { tolerance: 1e-3 });
  } else {
    const message = dcmjs.data.DicomMessage.readFile(arrayBuffer);
    const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);
    dataset._meta = dcmjs.data.DicomMetaDictionary.namifyDataset(message.meta);
    const multiframe = dcmjs.normalizers.Normalizer.normalizeToDataset([dataset]);
    const frames = Number(multiframe.NumberOfFrames || 1);
    let decoding;
    if (route === "loader") {
      const transferSyntax = dataset._meta.TransferSyntaxUID.Value[0];
      const pixelData = dataset.PixelData;
      const frameBytes = (Number(multiframe.Rows) * Number(multiframe.Columns) * Number(multiframe.BitsAllocated)) / 8;
      const frameBuffer = (frameNumber) => {
        if (Array.isArray(pixelData) && pixelData.length === frames && frames > 1) {
          return new Uint8Array(pixelData[frameNumber - 1]);
        }
        const all = new Uint8Array(Array.isArray(pixelData) ? pixelData[0] : pixelData);
        if (frames === 1) return all;
        return all.slice((frameNumber - 1) * frameBytes, frameNumber * frameBytes);
      };
      decoding = imageLoaderDecoder(multiframe, frameBuffer, transferSyntax);
    } else {
      const raw = fs.readFileSync(framesPath);
      const bytes = raw.byteLength / frames;
      const Typed = Number(multiframe.BitsAllocated) === 16 ? Uint16Array : Uint8Array;
      decoding = Promise.resolve(async (_id, frameNumber) => {
        const start = raw.byteOffset + (frameNumber - 1) * bytes;
        return new Typed(raw.buffer.slice(start, start + bytes));
      });
    }
    result = decoding.then((decodeImageData) => createLabelmapsFromSegImageIds(imageIds, "seg:1", provider, {
      tolerance: 1e-3, multiframe, decodeImageData,
      frameImageIds: Array.from({ length: frames }, (_, i) => `seg:1#frame=${i + 1}`),
    }));
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
