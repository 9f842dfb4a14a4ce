"""Tools that run beside the daemon, never on its frame loop: the timeline report, the
offline study analysis of recorded videos, and the pipeline benchmark."""
