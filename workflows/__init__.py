"""The workflows mmflow ships: `mmflow workflows` lists them, `mmflow workflows copy NAME` writes one to edit."""
