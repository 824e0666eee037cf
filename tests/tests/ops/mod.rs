//! Operating a fleet: `kiln-scheduler autoscale` against a real container engine.

mod autoscale;
