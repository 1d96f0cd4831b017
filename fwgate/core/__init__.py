"""The gate's whole life as one pure state machine: typed inputs in, typed actions
out, the clock passed in. fwgate.daemon executes the actions; tests drive it directly."""
