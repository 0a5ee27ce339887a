"""The generated-dataset format and the job that writes it: layout, run info, manifest, writers,
reader, dataset card, and ``generate_dataset`` (local worker processes or Ray tasks).

Names load their module when first used: reading a dataset does not import pyarrow or Ray.
"""

from ..common.lazy import lazy_exports

_EXPORTS = {
    "write_dataset_card": ".card",
    "GenerationReport": ".generation", "generate_dataset": ".generation",
    "GenerationTask": ".workers", "SampleMaker": ".workers", "sample_seed": ".workers",
    "FORMATS": ".layout", "RUN_INFO": ".layout", "dataset_format": ".layout", "generated_input_folder": ".layout",
    "is_generated_dataset": ".layout", "read_run_info": ".layout",
    "Manifest": ".manifest",
    "GeneratedSample": ".reader", "read_generated": ".reader",
    "EncodedSample": ".writers", "HubFolderWriter": ".writers", "MVTecWriter": ".writers", "make_writer": ".writers",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
