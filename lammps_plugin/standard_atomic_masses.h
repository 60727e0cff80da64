/* -*- c++ -*- ----------------------------------------------------------
   Standard atomic masses (g/mol, LAMMPS 'metal' mass units) of the elements
   H to No, to three decimals: the IUPAC standard atomic weights (conventional
   values where IUPAC gives an interval), and for elements without stable
   isotopes the mass number of the longest-lived one.

   pair_style nequip compares each LAMMPS type's mass with the element that
   pair_coeff names for it, to catch element names given in another order
   than the data file's types.
------------------------------------------------------------------------- */

#ifndef LMP_NEQUIP_STANDARD_ATOMIC_MASSES_H
#define LMP_NEQUIP_STANDARD_ATOMIC_MASSES_H

#include <cstring>

namespace nequip_plugin {

struct Element {
  const char *symbol;
  double mass;
};

// clang-format off
inline constexpr Element STANDARD_ATOMIC_MASSES[] = {
  {"H", 1.008},     {"He", 4.003},    {"Li", 6.94},     {"Be", 9.012},    {"B", 10.81},
  {"C", 12.011},    {"N", 14.007},    {"O", 15.999},    {"F", 18.998},    {"Ne", 20.180},
  {"Na", 22.990},   {"Mg", 24.305},   {"Al", 26.982},   {"Si", 28.085},   {"P", 30.974},
  {"S", 32.06},     {"Cl", 35.45},    {"Ar", 39.948},   {"K", 39.098},    {"Ca", 40.078},
  {"Sc", 44.956},   {"Ti", 47.867},   {"V", 50.942},    {"Cr", 51.996},   {"Mn", 54.938},
  {"Fe", 55.845},   {"Co", 58.933},   {"Ni", 58.693},   {"Cu", 63.546},   {"Zn", 65.38},
  {"Ga", 69.723},   {"Ge", 72.630},   {"As", 74.922},   {"Se", 78.971},   {"Br", 79.904},
  {"Kr", 83.798},   {"Rb", 85.468},   {"Sr", 87.62},    {"Y", 88.906},    {"Zr", 91.224},
  {"Nb", 92.906},   {"Mo", 95.95},    {"Tc", 98.0},     {"Ru", 101.07},   {"Rh", 102.906},
  {"Pd", 106.42},   {"Ag", 107.868},  {"Cd", 112.414},  {"In", 114.818},  {"Sn", 118.710},
  {"Sb", 121.760},  {"Te", 127.60},   {"I", 126.904},   {"Xe", 131.293},  {"Cs", 132.905},
  {"Ba", 137.327},  {"La", 138.905},  {"Ce", 140.116},  {"Pr", 140.908},  {"Nd", 144.242},
  {"Pm", 145.0},    {"Sm", 150.36},   {"Eu", 151.964},  {"Gd", 157.25},   {"Tb", 158.925},
  {"Dy", 162.500},  {"Ho", 164.930},  {"Er", 167.259},  {"Tm", 168.934},  {"Yb", 173.045},
  {"Lu", 174.967},  {"Hf", 178.49},   {"Ta", 180.948},  {"W", 183.84},    {"Re", 186.207},
  {"Os", 190.23},   {"Ir", 192.217},  {"Pt", 195.084},  {"Au", 196.967},  {"Hg", 200.592},
  {"Tl", 204.38},   {"Pb", 207.2},    {"Bi", 208.980},  {"Po", 209.0},    {"At", 210.0},
  {"Rn", 222.0},    {"Fr", 223.0},    {"Ra", 226.0},    {"Ac", 227.0},    {"Th", 232.038},
  {"Pa", 231.036},  {"U", 238.029},   {"Np", 237.0},    {"Pu", 244.0},    {"Am", 243.0},
  {"Cm", 247.0},    {"Bk", 247.0},    {"Cf", 251.0},    {"Es", 252.0},    {"Fm", 257.0},
  {"Md", 258.0},    {"No", 259.0},
};
// clang-format on

// The standard atomic mass of the element `symbol` (case as in the periodic table), or 0
// when `symbol` names no element.
inline double standard_atomic_mass(const char *symbol)
{
  for (const Element &element : STANDARD_ATOMIC_MASSES)
    if (std::strcmp(element.symbol, symbol) == 0) return element.mass;
  return 0.0;
}

}    // namespace nequip_plugin

#endif
