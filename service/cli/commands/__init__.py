"""The commands, one module per group: screen and explain, trials, serve, sweeps (sweep, runs,
diff, export), terminology (expand, unmapped). Each imports its machinery when it runs."""
