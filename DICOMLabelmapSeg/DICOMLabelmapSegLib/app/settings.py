"""Export defaults kept in the application settings, shared by the module panel, the DICOM settings
panel entry of the plugin (``settingsPanelEntry``) and the Export to DICOM dialog.

Settings are written when the user applies them (the panel's Export button, the DICOM settings
panel), never per keystroke; values saved in a scene's parameter node are not overwritten when the
module is entered (:func:`panelValuesOnEntry`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..dicom.syntax import TransferSyntax

logger = logging.getLogger(__name__)

SETTINGS_TRANSFER_SYNTAX = "DICOMLabelmapSeg/TransferSyntax"
SETTINGS_PALETTE_COLOR = "DICOMLabelmapSeg/PaletteColor"
SETTINGS_CONTENT_CREATOR_NAME = "DICOMLabelmapSeg/ContentCreatorName"
SETTINGS_EXPORT_TO_DATABASE = "DICOMLabelmapSeg/ExportToDatabase"
SETTINGS_EXPORT_TO_FOLDER = "DICOMLabelmapSeg/ExportToFolder"
SETTINGS_OUTPUT_FOLDER = "DICOMLabelmapSeg/OutputFolder"

#: What the Export to DICOM dialog uses; the DICOM settings panel shows and edits these two.
DIALOG_KEYS = (SETTINGS_TRANSFER_SYNTAX, SETTINGS_PALETTE_COLOR)

SETTINGS_DEFAULTS: dict[str, str] = {
    SETTINGS_TRANSFER_SYNTAX: TransferSyntax.JPEG_LS.value,
    SETTINGS_PALETTE_COLOR: "false",
    SETTINGS_CONTENT_CREATOR_NAME: "",
    SETTINGS_EXPORT_TO_DATABASE: "true",
    SETTINGS_EXPORT_TO_FOLDER: "false",
    SETTINGS_OUTPUT_FOLDER: "",
}


def toBool(value: Any) -> bool:
    """QSettings values come back as bool, int or strings such as 'true'/'false'."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def syntaxFromSetting(value: Any) -> TransferSyntax:
    """The transfer syntax stored in settings or chosen in a combo box (short name, label or UID).

    Unknown or empty values give the default (JPEG-LS lossless) with a warning in the log.
    """
    if isinstance(value, TransferSyntax):
        return value
    text = str(value or "").strip()
    for syntax in TransferSyntax:
        if text == syntax.label:
            return syntax
    try:
        return TransferSyntax.parse(text) if text else TransferSyntax.JPEG_LS
    except ValueError:
        logger.warning("Unknown transfer syntax setting %r; using JPEG-LS lossless.", value)
        return TransferSyntax.JPEG_LS


def syntaxChoices() -> list[str]:
    """Labels shown in the transfer syntax choosers (default first)."""
    return [syntax.label for syntax in TransferSyntax]


def syntaxExplanation(value: Any) -> str:
    """One line shown under the transfer syntax chooser."""
    syntax = syntaxFromSetting(value)
    missing = syntax.missing_encoder_packages()
    text = syntax.explanation
    if missing:
        text += f" Needs the Python package {', '.join(missing)} (offered for installation on export)."
    return text


@dataclass(frozen=True)
class PanelValues:
    """The module panel's export choices (the parameter node's fields)."""

    transferSyntax: str  # label, as in the combo box
    paletteColor: bool
    contentCreatorName: str
    exportToDatabase: bool
    exportToFolder: bool
    outputFolder: str


def withDefaults(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Stored settings with the defaults filled in for absent (None) values."""
    return {key: default if stored.get(key) is None else stored[key] for key, default in SETTINGS_DEFAULTS.items()}


def panelValuesFromSettings(stored: Mapping[str, Any]) -> PanelValues:
    """The panel's values as the settings give them (defaults for what was never saved)."""
    values = withDefaults(stored)
    return PanelValues(
        transferSyntax=syntaxFromSetting(values[SETTINGS_TRANSFER_SYNTAX]).label,
        paletteColor=toBool(values[SETTINGS_PALETTE_COLOR]),
        contentCreatorName=str(values[SETTINGS_CONTENT_CREATOR_NAME] or ""),
        exportToDatabase=toBool(values[SETTINGS_EXPORT_TO_DATABASE]),
        exportToFolder=toBool(values[SETTINGS_EXPORT_TO_FOLDER]),
        outputFolder=str(values[SETTINGS_OUTPUT_FOLDER] or ""),
    )


def settingsFromPanelValues(values: PanelValues) -> dict[str, str]:
    """What the panel writes into the settings when the user exports (applies) its choices."""
    return {
        SETTINGS_TRANSFER_SYNTAX: syntaxFromSetting(values.transferSyntax).value,
        SETTINGS_PALETTE_COLOR: str(bool(values.paletteColor)).lower(),
        SETTINGS_CONTENT_CREATOR_NAME: values.contentCreatorName.strip(),
        SETTINGS_EXPORT_TO_DATABASE: str(bool(values.exportToDatabase)).lower(),
        SETTINGS_EXPORT_TO_FOLDER: str(bool(values.exportToFolder)).lower(),
        SETTINGS_OUTPUT_FOLDER: str(values.outputFolder or "").strip(),
    }


def panelValuesOnEntry(initialized: bool, sceneValues: PanelValues, stored: Mapping[str, Any]) -> PanelValues:
    """Values the panel shows when the module is entered.

    A parameter node that was already initialized (in this session or saved in a loaded scene)
    keeps its values; a new one starts from the settings.
    """
    return sceneValues if initialized else panelValuesFromSettings(stored)


def dialogSettingsFromChoices(syntaxLabel: str, paletteColor: bool) -> dict[str, str]:
    """What the DICOM settings panel entry writes (the Export dialog's defaults)."""
    return {
        SETTINGS_TRANSFER_SYNTAX: syntaxFromSetting(syntaxLabel).value,
        SETTINGS_PALETTE_COLOR: str(bool(paletteColor)).lower(),
    }


def outputFolderChosen(folder: Any) -> bool:
    """True if a folder was chosen ('' and '.' mean none)."""
    return str(folder or "").strip() not in ("", ".")
