"""The command line: the commands, the rich report and the plot."""
