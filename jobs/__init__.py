"""PyFlink jobs: one job per module, each with a main()."""
