"""FedDF client (Lin et al., NeurIPS 2020, arXiv:2006.07242), soft-label variant.

Shares raw **logits** on the public subset (the server averages them, as FedDF averages the
ensemble's logits); digests what the server sends back -- the distilled global model's
predictions -- then trains on its private data. The server side is ``server/strategies/feddf.py``.
"""

from clients.fedmd import FedMDClient


class FedDFClient(FedMDClient):
    """Same wire behaviour as FedMD's client: logits up, a teacher's probabilities down."""
