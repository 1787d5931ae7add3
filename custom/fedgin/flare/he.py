"""Encrypted aggregation: the one piece of FLARE's HE path (``nvflare.app_opt.he``) that 2.9 breaks.

FLARE 2.9's ``WFCommServer`` deep-copies a broadcast task's data before sending it. A TenSEAL CKKS
vector whose context holds no secret key (every vector at the server) cannot be copied ("the
current context is public"), so ``HECrossSiteModelEval``'s ``validate`` task, which carries the
global model as CKKS vectors, fails at the server; cross-site evaluation then has no results while
the job still ends COMPLETED. The ``train`` task is not affected: ``HEModelShareableGenerator``
sends the vectors serialized (bytes), and this filter does the same for the models the server
hands out for evaluation.
"""

from __future__ import annotations

from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import Learnable
from nvflare.app_opt.he.model_serialize_filter import HEModelSerializeFilter as FlareHEModelSerializeFilter

__all__ = ["HEModelSerializeFilter"]


class HEModelSerializeFilter(FlareHEModelSerializeFilter):
    """FLARE's persistor filter for encrypted models, except that a model handed out (``get``: the
    model locator of cross-site evaluation) stays serialized. Bytes copy fine, and the sites'
    ``HEModelDecryptor`` reads serialized vectors as well. Same argument (``tenseal_context_file``)."""

    def process_post_get(self, learnable: Learnable, fl_ctx: FLContext) -> Learnable:
        return learnable
