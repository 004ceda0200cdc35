"""The evaluation's statistical methods: one small, pure, typed module per method.

* ``intervals`` — Wilson (one rate) and Newcombe hybrid-score (a difference of rates) intervals;
* ``tests`` — the two-proportion z-test for large cells, Fisher's exact test for small ones, and
  the "not enough data" state;
* ``multiplicity`` — Holm (variants) and Benjamini–Hochberg (breakdowns such as provinces);
* ``sequential`` — mSPRT with a normal mixture: an always-valid p-value and confidence sequence;
* ``power`` — minimum detectable effect and sample size before a campaign starts;
* ``revenue`` — incremental revenue per target with a studentized bootstrap interval;
* ``bayes`` — Beta-Binomial probability that the variant is better, and its expected loss.

No module here touches a database, the web or the clock.
"""
