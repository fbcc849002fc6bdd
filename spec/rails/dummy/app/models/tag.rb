# frozen_string_literal: true

class Tag < ApplicationRecord
  belongs_to :tenant
  has_and_belongs_to_many :tasks
end
