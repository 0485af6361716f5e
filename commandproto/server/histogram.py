"""
A latency histogram whose merges are exact: histograms from several
connections or processes add up bucket by bucket, and percentiles are read
from the sum, never averaged.

Buckets are log-linear, as in HdrHistogram: values below 2048 have a bucket
each, and above that every power-of-two range is cut into 1024 buckets, so a
bucket is never wider than 1/1024 (0.1%) of the values in it.  Values are
integers, in whatever unit the caller picks (the load tester records
nanoseconds).
"""

from __future__ import annotations

import math
from fractions import Fraction

SIGNIFICANT_BITS = 11
_HALF = 1 << (SIGNIFICANT_BITS - 1)


def bucket_index(value: int) -> int:
    """
    The bucket a value falls in.

    :param value: a non-negative integer.
    :returns: its bucket's index; indices grow with the values they hold.
    """
    if value < 0:
        raise ValueError(f"a latency cannot be negative: {value}")
    shift = value.bit_length() - SIGNIFICANT_BITS
    if shift <= 0:
        return value
    return (shift << (SIGNIFICANT_BITS - 1)) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """
    The values a bucket holds.

    :param index: a bucket index from :func:`bucket_index`.
    :returns: the lowest and highest value in that bucket, both included.
    """
    if index < 2 * _HALF:
        return index, index
    shift = index // _HALF - 1
    mantissa = index - shift * _HALF
    return mantissa << shift, ((mantissa + 1) << shift) - 1


class LatencyHistogram:
    """
    Counts of values by bucket, with the exact count, sum, minimum and
    maximum beside them.
    """

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum = 0
        self.min = 0
        self.max = 0

    def record(self, value: int, count: int = 1) -> None:
        """
        Add ``count`` samples that all have the same value.

        :param value: the value, a non-negative integer.
        :param count: how many samples have it.
        """
        if count <= 0:
            return
        index = bucket_index(value)
        counts = self.counts
        counts[index] = counts.get(index, 0) + count
        if not self.total or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.total += count
        self.sum += value * count

    def merge(self, other: LatencyHistogram) -> None:
        """
        Add every sample of another histogram to this one.
        """
        if not other.total:
            return
        counts = self.counts
        for index, count in other.counts.items():
            counts[index] = counts.get(index, 0) + count
        self.min = other.min if not self.total else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total
        self.sum += other.sum

    def mean(self) -> float:
        """
        :returns: the exact mean of the samples, or 0.0 when there are none.
        """
        return self.sum / self.total if self.total else 0.0

    def percentile(self, percent: float) -> int:
        """
        The nearest-rank percentile: the smallest sample that at least
        ``percent`` per cent of the samples are less than or equal to.

        Exact for values below 2048; above that, the highest value of the
        bucket that sample is in, but never above the exact maximum or below
        the exact minimum.

        :param percent: from 0 to 100.
        :returns: the value, or 0 when there are no samples.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"a percentile is between 0 and 100, not {percent}")
        if not self.total:
            return 0
        # Fraction of the decimal text: 99.9 per cent of 1000 is 999, exactly.
        rank = max(1, math.ceil(Fraction(str(percent)) * self.total / 100))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return max(self.min, min(bucket_bounds(index)[1], self.max))
        return self.max

    def to_json(self) -> dict[str, object]:
        """
        :returns: a JSON-ready form that :meth:`from_json` reads back exactly.
        """
        return {
            "counts": [[index, count] for index, count in sorted(self.counts.items())],
            "total": self.total,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: object) -> LatencyHistogram:
        """
        Rebuild a histogram from :meth:`to_json`'s output.

        :raises ValueError: if ``data`` is not such output.
        """
        histogram = cls()
        if not isinstance(data, dict):
            raise ValueError(f"not a latency histogram: {data!r:.200}")
        try:
            for index, count in data["counts"]:
                histogram.counts[int(index)] = int(count)
            histogram.total = int(data["total"])
            histogram.sum = int(data["sum"])
            histogram.min = int(data["min"])
            histogram.max = int(data["max"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a latency histogram: {data!r:.200}") from e
        if sum(histogram.counts.values()) != histogram.total:
            raise ValueError("histogram counts do not add up to its total")
        return histogram
