"""speechtl: adapt pretrained speech recognisers to accents and report WER before and after.

The package is laid out as one road, data → features → models → adapt → evaluate → report;
each subpackage may only call the ones before it.
"""

__version__ = "0.1.0"


def load_model(source: str, **kwargs):
    """Load a speech recogniser from a hub id, a local directory, an experiment dir or a CTranslate2 dir.

    A thin re-export of :func:`speechtl.models.load_model`, kept lazy so that ``import speechtl``
    stays cheap (torch and transformers load only when a model does).
    """
    from speechtl.models import load_model as _load

    return _load(source, **kwargs)
