"""The paper's claims checked against our results."""
