"""Exact unlearning: slice orders (``sequences``), the deletion simulator (``simulate``), deletion-request streams
(``requests``) and the loop that serves them (``runner``). The methods are ``clpet.methods.unlearning``."""
