"""speechtl: adapt pretrained speech recognisers to accents and report WER before and after.

The package is laid out as one road, data → features → models → adapt → evaluate → report;
each subpackage may only call the ones before it.
"""

__version__ = "0.1.0"


def load_model(source: str, adapters: dict[str, str] | None = None, device: str | None = None,
               check_base: bool = True, **kwargs):
    """Load a speech recogniser, optionally with named adapters to switch between.

    ``source``: a hub id, a local checkpoint, an experiment dir, a CTranslate2 dir, or an adapter dir
    (whose card names its base). ``adapters``: ``{name: adapter_dir}``; the first is active. Then
    ``model.set_adapter(name)``, ``model.disable_adapters()``, ``model.merge()``, and
    ``model.transcribe(model.collate(waveforms))``. An adapter trained on other base weights is refused
    (``check_base=False`` loads it anyway, with a warning).

    Kept lazy so that ``import speechtl`` stays cheap (torch and transformers load only when a model does).
    """
    from speechtl.adapt.adapters import load

    return load(source, adapters=adapters, device=device, check_base=check_base, **kwargs)
