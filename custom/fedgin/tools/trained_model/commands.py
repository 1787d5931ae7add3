"""Commands that use a trained model: ``evaluate``, ``predict``, ``export``; each command's parser
(``add_*``) beside its handler (``cmd_*``)."""

from __future__ import annotations

from pathlib import Path


def cmd_evaluate(args) -> int:
    from fedgin.seg.evaluation import evaluate_model
    from fedgin.tools.dice_table import dice_table
    from fedgin.tools.files import write_json
    from fedgin.tools.job_folder import training_config_for

    config = training_config_for(args.model, args.job)
    result = evaluate_model(args.model, args.site_config, config, split=args.split)
    if not result["n_volumes"]:
        raise ValueError(f"{args.site_config}: its {args.split!r} split lists no volumes; there is nothing to evaluate")
    name = Path(args.site_config).stem
    print(dice_table({name: result}, title=f"Dice on {name} ({args.split} split)"))
    if args.out:
        write_json(args.out, result)
        print(f"written to {args.out}")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice per organ of a model on a site's split")
    p.add_argument("--model", required=True, help="FL_global_model.pt or a state dict")
    p.add_argument("--site-config", required=True)
    p.add_argument("--split", default="test", choices=("validation", "test"))
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_predict(args) -> int:
    from fedgin.tools.job_folder import training_config_for
    from fedgin.tools.trained_model.predict import find_inputs, predict, volume_table

    config = training_config_for(args.model, args.job)
    inputs = find_inputs(args.input, args.modality, args.split)
    print(f"Segmenting {len(inputs.images)} {inputs.modality} scan(s) with {args.model} ({', '.join(config.organs)})")
    result = predict(args.model, config, inputs, args.out, preview=args.preview, device=args.device)
    print(volume_table(result), end="")
    print(f"masks, labels.json and predictions.json in {args.out}")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment new scans: one label map per input, on the input's own grid")
    p.add_argument("--model", required=True, help="FL_global_model.pt (final) or best_FL_global_model.pt")
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.add_argument("--input", required=True, help="a NIfTI file, a folder of them, a datalist or a site config")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--modality", default=None, help="CT or MR (needed unless --input is a site config)")
    p.add_argument("--split", default="test", help="the datalist's list to segment (default: test)")
    p.add_argument("--preview", action="store_true", help="also a PNG per file: axial slices with the mask")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the GPU when there is one)")
    p.set_defaults(func=cmd_predict)


def cmd_export(args) -> int:
    from fedgin.tools.job_folder import job_identity, training_config_for
    from fedgin.tools.trained_model.bundle import export_bundle
    from fedgin.tools.trained_model.predict import model_kind

    config = training_config_for(args.model, args.job)
    name, rounds = job_identity(args.model, args.job)
    trained_on = [m.strip() for m in args.trained_on.split(",") if m.strip()]
    out = export_bundle(
        args.model,
        config,
        args.out,
        args.modality,
        trained_on,
        name,
        rounds if args.round is None else args.round,
        model_kind(args.model),
    )
    print(f"MONAI bundle in {out}; run it with:")
    print(
        f"  python -m monai.bundle run --config_file {out}/configs/inference.json --bundle_root {out} "
        "--input_dir SCANS --output_dir MASKS"
    )
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="a trained model as a MONAI bundle that runs without fedgin")
    p.add_argument("--model", required=True, help="FL_global_model.pt (final) or best_FL_global_model.pt")
    p.add_argument("--job", default=None, help="job folder the model comes from (found next to FLARE's model)")
    p.add_argument("--out", required=True, help="the bundle's folder (replaced)")
    p.add_argument("--modality", required=True, help="CT or MR: the scans the bundle is for (its normalization)")
    p.add_argument("--trained-on", required=True, help="the training sites' modalities, e.g. CT,MR (no names)")
    p.add_argument("--round", type=int, default=None, help="the FL round of the model (default: the job's rounds)")
    p.set_defaults(func=cmd_export)
