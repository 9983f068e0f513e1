"""Results aggregation: ``results.json`` files over seeds -> Markdown / CSV tables and plots (methods.md §5)."""

from prompt_learning.results.aggregate import (
    Aggregate,
    AggregationWarning,
    Base2NewAverage,
    FewShotAverage,
    Group,
    Stat,
    TransferSummary,
    aggregate,
    load_results,
    print_summary,
    write_outputs,
)

__all__ = ["Aggregate", "AggregationWarning", "Base2NewAverage", "FewShotAverage", "Group", "Stat",
           "TransferSummary", "aggregate", "load_results", "print_summary", "write_outputs"]
