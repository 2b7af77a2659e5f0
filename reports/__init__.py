"""Reports: tables, plots and a self-contained HTML page built from a results store (never trains)."""
