"""Named datasets: a registry of files with checksums and licences (`registry.py`), fetching with resume,
verification and a cache (`download.py`), safe extraction and converters to learnkit's on-disk form
(`convert.py`).

Example:
    >>> from learnkit.datasets import get_dataset, list_datasets
    >>> [d.name for d in list_datasets()]                            # doctest: +SKIP
    ['fashion-mnist', 'fashion-mnist-sample', 'fortunes-6', 'fortunes-sample']
    >>> folder = get_dataset("fashion-mnist-sample", offline=True)   # doctest: +SKIP
    >>> (folder / "labels.csv").read_text().splitlines()[1]          # doctest: +SKIP
    'train/T-shirt_top/1.png,T-shirt/top,False'
"""
from learnkit.datasets.convert import CONVERTERS, extract_archive
from learnkit.datasets.download import MANIFEST, dataset_home, download_file, get_dataset, is_cached, verify_file
from learnkit.datasets.registry import (Checksum, Dataset, DatasetError, DatasetFile, dataset_info, list_datasets,
                                        register_dataset, sample_path, unregister_dataset)

__all__ = ["Checksum", "Dataset", "DatasetError", "DatasetFile", "dataset_info", "list_datasets", "register_dataset",
           "unregister_dataset", "sample_path", "get_dataset", "dataset_home", "is_cached", "verify_file",
           "download_file", "extract_archive", "CONVERTERS", "MANIFEST"]
