"""Results aggregation: ``results.json`` files over seeds -> Markdown / CSV tables and plots.

Generic here (loading, grouping over seeds, sweep points, duplicates, seed checks, assembling the outputs);
each protocol's averages, tables and plots come from its module in ``prompt_learning/protocols/``
(definitions: docs/protocols.md)."""

from prompt_learning.protocols.base2new import Base2NewAverage
from prompt_learning.protocols.few_shot import FewShotAverage
from prompt_learning.protocols.tables import Group, Stat
from prompt_learning.protocols.transfer import TransferSummary
from prompt_learning.results.aggregate import Aggregate, aggregate
from prompt_learning.results.outputs import print_summary, to_csv, to_markdown, write_outputs
from prompt_learning.results.records import AggregationWarning, load_results

__all__ = ["Aggregate", "AggregationWarning", "Base2NewAverage", "FewShotAverage", "Group", "Stat",
           "TransferSummary", "aggregate", "load_results", "print_summary", "to_csv", "to_markdown",
           "write_outputs"]
