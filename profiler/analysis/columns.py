"""Columns of the session's frames as the analysis reads them: numpy arrays, NaN for missing.

The session reader gives pandas frames whose columns may be nullable, categorical
or datetimes; the analysis computes over numpy arrays. Every analysis module
converts through these few functions, so a missing value, a naive datetime or
a categorical column reads the same way in an episode, a finding and a count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd


def floats(series: pd.Series[Any]) -> npt.NDArray[np.float64]:
    """``series`` as float64, NaN where missing."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def column_floats(frame: pd.DataFrame, name: str, default: float) -> npt.NDArray[np.float64]:
    """``frame[name]`` as float64, or ``default`` on every row when the column is absent."""
    if name not in frame.columns:
        return np.full(len(frame), default)
    return floats(frame[name])


def epoch_seconds(series: pd.Series[Any]) -> npt.NDArray[np.float64]:
    """Epoch seconds from datetimes (naive ones read as UTC) or from numbers."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        aware = series if series.dt.tz is not None else series.dt.tz_localize("UTC")
        seconds = (aware - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        return floats(seconds)
    return floats(series)


def category_codes(
    series: pd.Series[Any], rows: Any
) -> tuple[npt.NDArray[np.int64], Sequence[Any]]:
    """Integer codes (-1 for missing) of ``series`` at ``rows``, and what they stand for."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()[rows].astype(np.int64)
        return codes, list(series.cat.categories)
    factorized, uniques = pd.factorize(series.iloc[rows])
    return factorized.astype(np.int64), list(uniques)


def empty_frame(dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """A frame with no rows and these columns, each of its dtype (``"category"``: categorical),
    so an empty result has the columns and dtypes a full one has."""
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame(
        {name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()}
    )
    return frame


def is_missing(value: Any) -> bool:
    """Whether one cell is missing: None, ``pd.NA`` or NaN."""
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def nullable_ints(series: pd.Series[Any]) -> pd.Series[Any]:
    """``series`` as nullable ``Int64``, indexed from 0."""
    converted: pd.Series[Any] = series.reset_index(drop=True).astype("Int64")
    return converted


def values_at(frame: pd.DataFrame, name: str, rows: Any) -> Any:
    """``frame[name]`` at ``rows`` (dtype kept: a categorical stays one), None when absent."""
    if name not in frame.columns:
        return [None] * len(rows)
    return frame[name].iloc[rows].reset_index(drop=True)
