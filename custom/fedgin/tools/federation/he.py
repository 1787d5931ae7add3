"""Encrypted aggregation (FLARE's TenSEAL CKKS path): the keys, and the global model a site decrypts.

With ``build_job(..., he=True)`` the server never holds a plain model after round 1: its
``FL_global_model.pt`` keeps every layer as a serialized CKKS ciphertext. Only a site can read it,
with the secret key in its kit's ``startup/client_context.tenseal`` (every site holds the same one).
:func:`decrypt_model` turns such a file into the plain checkpoint the other commands read (evaluate,
predict, export). :func:`new_contexts` makes keys the way provisioning's ``HEBuilder`` does, for
tests and the bench.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Where FLARE's HEBuilder (``nvflare poc prepare --he``, provisioning) puts the contexts: each kit's startup/.
CLIENT_CONTEXT = "client_context.tenseal"  # parameters, relinearization keys and the secret key
SERVER_CONTEXT = "server_context.tenseal"  # parameters and relinearization keys: no secret key


class HEError(ValueError):
    """A model or a context is not what encrypted aggregation needs; the message names the file."""


def new_contexts(**builder_args) -> tuple[bytes, bytes]:
    """Fresh (server, client) contexts, serialized exactly as FLARE's ``HEBuilder`` writes them
    (``builder_args``: its ``poly_modulus_degree``, ``coeff_mod_bit_sizes``, ``scale_bits``)."""
    from nvflare.lighter.impl.he import HEBuilder

    builder = HEBuilder(**builder_args)
    builder.initialize(None, None)  # makes the context; neither argument is read
    return builder.get_serialized_context(), builder.get_serialized_context(is_client=True)


def read_context(path: str | Path):
    """A TenSEAL context from a file (a kit's ``startup/client_context.tenseal``)."""
    import tenseal as ts

    path = Path(path)
    if not path.is_file():
        raise HEError(f"{path}: no such TenSEAL context (a site's kit has startup/{CLIENT_CONTEXT})")
    return ts.context_from(path.read_bytes())


def encrypted_layers(model_path: str | Path) -> list[str]:
    """The layers of a saved global model (``FL_global_model.pt``) that are CKKS ciphertexts."""
    import torch

    weights = torch.load(model_path, map_location="cpu", weights_only=True).get("model", {})
    return sorted(k for k, v in weights.items() if isinstance(v, bytes))


def decrypt_model(model_path: str | Path, context_path: str | Path, out_path: str | Path, shapes: dict) -> Path:
    """Decrypt an encrypted global model with a site's secret key into a plain checkpoint.

    Args:
        model_path: the server's ``FL_global_model.pt`` (or ``best_...``) of an HE job.
        context_path: a site's ``client_context.tenseal`` (the server's has no secret key).
        out_path: where the plain checkpoint goes (``{"model": state dict}``, as FLARE saves it).
        shapes: each layer's shape (``{name: tensor.shape}`` of the job's model): CKKS vectors are flat.

    Returns:
        ``out_path``.
    """
    import tenseal as ts
    import torch

    context = read_context(context_path)
    if not context.has_secret_key():
        raise HEError(f"{context_path} holds no secret key: decrypt with a site's {CLIENT_CONTEXT}")
    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    plain = {}
    for key, value in saved.get("model", {}).items():
        if key not in shapes:
            raise HEError(f"{model_path}: layer {key!r} is not in the job's model")
        if isinstance(value, bytes):
            value = np.asarray(ts.ckks_vector_from(context, value).decrypt(), dtype=np.float32)
        plain[key] = torch.as_tensor(np.asarray(value, dtype=np.float32).reshape(tuple(shapes[key])))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": plain}, out_path)
    return out_path


def decrypt_job_model(model_path: str | Path, context_path: str | Path, out_path: str | Path, job_dir=None) -> Path:
    """:func:`decrypt_model` with the shapes of the job's model (its client config: ``job_dir``, or
    the app folder FLARE saved the model in)."""
    from fedgin.tools.job_folder import training_config_for

    model = training_config_for(model_path, job_dir).build_model()
    return decrypt_model(model_path, context_path, out_path, {k: v.shape for k, v in model.state_dict().items()})


def component_context(identity: str, current_round: int = 0):
    """An FLContext as FLARE hands one to the HE filters and aggregator of ``identity``'s peer, to run
    FLARE's HE components outside a FLARE run (the cost bench, tests)."""
    from nvflare.apis.fl_constant import FLContextKey, ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.app_constant import AppConstants

    ctx = FLContext()
    ctx.set_prop(FLContextKey.SECURE_MODE, False, private=True, sticky=False)
    ctx.set_prop(AppConstants.CURRENT_ROUND, current_round, private=True, sticky=False)
    peer = FLContext()
    peer.set_prop(ReservedKey.IDENTITY_NAME, identity, private=False, sticky=False)
    ctx.set_peer_context(peer)
    return ctx
