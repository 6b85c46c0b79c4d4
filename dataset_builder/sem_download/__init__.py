"""The NFFA-EUROPE SEM dataset (Aversa et al., Scientific Data 5, 180172, 2018; 21,283 images in 10 categories;
CC BY 4.0; B2SHARE record 80df8606fcdb4b2bae1656f0dc6db8ba) fetched through B2SHARE's public records API.

Modules: `records` lists the record's files, `transfer` downloads one with resume and verifies it,
`archives` unpacks it safely into `OUT/<Category>/`, `cli` is `mvaema-fetch-sem`.

What was checked against public material, and what is assumed (no network to the live service here):

- Checked: the B2SHARE 2.x record response (EUDAT's B2SHARE training guide): `files` is a list of
  `{key, size, checksum: "md5:<hex>", bucket, ePIC_PID, version_id}`, `links.files` is the bucket address
  and `{links.files}/{key}` serves the bytes. The checksum prefix names the algorithm.
- Checked: public download scripts for this dataset name ten archives, one per category, `Biological.tar`,
  `Fibres.tar`, `Films_Coated_Surface.tar`, `MEMS_devices_and_electrodes.tar`, `Nanowires.tar`,
  `Particles.tar`, `Patterned_surface.tar`, `Porous_Sponge.tar`, `Powder.tar`, `Tips.tar` (about 12 GB
  in all), served by today's InvenioRDM-based B2SHARE at `/api/records/<id>/files/<key>/content`, the
  address each file entry gives as `links.content`; both response shapes are read.
- Assumed: that the record id above still answers at `/api/records/<id>` (B2SHARE moved to InvenioRDM and
  gave records new ids; use `--record` with the new id if the old one answers 404), and that each archive
  holds one folder named after its category (loose files at the top are filed under the archive's name).
"""

from .cli import fetch_sem_dataset
from .errors import FetchError

__all__ = ["FetchError", "fetch_sem_dataset"]
